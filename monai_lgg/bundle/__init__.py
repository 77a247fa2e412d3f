"""A bundle's concerns in one place: its settings and resolution (:mod:`~monai_lgg.bundle.settings`, torch-free),
the trained-model record beside its weights (:mod:`~monai_lgg.bundle.record`), its network
(:mod:`~monai_lgg.bundle.network`) and a new bundle's scaffold (:mod:`~monai_lgg.bundle.scaffold`).

Import the submodules; this package imports nothing, so ``monai_lgg.bundle.settings`` stays free of torch.
"""
