"""networks for monai_lgg."""
