"""Former home of bundle resolution, kept so that ``from monai_lgg.bundle_paths import ...`` keeps working.

Everything lives in :mod:`monai_lgg.bundle.settings` (torch-free, like this module).
"""

from monai_lgg.bundle.settings import (
    BUNDLES_DIR,
    MAX_BUNDLE_BYTES,
    MAX_BUNDLE_FILES,
    bundle_names,
    installed_bundle,
    output_root,
    resolve_bundle,
)

__all__ = [
    "BUNDLES_DIR",
    "MAX_BUNDLE_BYTES",
    "MAX_BUNDLE_FILES",
    "bundle_names",
    "installed_bundle",
    "output_root",
    "resolve_bundle",
]
