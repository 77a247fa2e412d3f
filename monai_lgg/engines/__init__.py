"""engines for monai_lgg."""
