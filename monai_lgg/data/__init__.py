"""data for monai_lgg."""
