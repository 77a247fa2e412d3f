"""metrics for monai_lgg."""
