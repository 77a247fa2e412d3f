"""Text templates that ``monai-lgg export_bundle`` writes into exported bundles (package data, no code)."""
