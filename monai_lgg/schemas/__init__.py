"""JSON schemas shipped with monai-lgg (package data, no code): ``meta_schema.json`` for bundle metadata."""
