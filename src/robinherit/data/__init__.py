"""Real data: the data-set loaders (LOADERS), what a run needs of its data (DataSource), and augmentations."""
