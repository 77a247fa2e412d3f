"""losses for monai_lgg."""
