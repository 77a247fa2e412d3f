"""What both ``transforms/`` and ``data/`` stand on: the LGG channel names, image readers and writers, TIFF reading
and the model frame's orientation. Nothing here imports ``transforms``, ``data`` (but its name rules,
:mod:`monai_lgg.data.naming`) or anything above them.
"""
