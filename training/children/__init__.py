"""The network and its training data: children's films, augmentation, the VGG16 model, checkpoints, joint runs."""
