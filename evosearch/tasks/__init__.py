"""Proxy tasks: datasets, the networks with norm-act slots, the training loop, task specs.

- :mod:`.datasets`, :mod:`.generated`, :mod:`.image_folder`: image data read from disk or generated.
- :mod:`.models`: ResNet, MobileNetV2 and EfficientNet-style networks whose norms are slots.
- :mod:`.train`: :class:`~evosearch.tasks.train.TaskConfig` and the training loop.
- :mod:`.specs`: the named task files (``configs/tasks/*.yaml``).
"""
