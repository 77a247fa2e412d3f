"""transforms for monai_lgg."""
