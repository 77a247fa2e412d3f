"""The LGG channel names, in the order of the Kaggle TIFFs' colour channels and of the networks' inputs."""

__all__ = ["CHANNEL_NAMES"]

CHANNEL_NAMES = ("pre-contrast", "FLAIR", "post-contrast")
"""Channel 0, 1 and 2 of an LGG image (``dataset.json``'s ``channel_names`` of a converted Kaggle data set)."""
