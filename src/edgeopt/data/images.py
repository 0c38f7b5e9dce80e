"""Image folders (one subfolder per class). Filled in by the images loader."""
