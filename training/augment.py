"""Class balance by augmentation: every class is seen equally often per epoch,
the minority classes through augmented repeats.

Only changes a radiologist would accept: small rotations, shifts and zoom,
gamma, slight blur, sharpening and noise. No horizontal flips: the heart is
on the left. Plain brightness and contrast changes are left out because the
shared preprocessing standardises every image and would undo them.
"""

import imgaug.augmenters as iaa
import keras
import numpy as np

from pneumo.preprocess import to_model_input


def xray_augmenter(seed):
    return iaa.Sequential(
        [
            iaa.Affine(
                rotate=(-10, 10),
                translate_percent={"x": (-0.08, 0.08), "y": (-0.08, 0.08)},
                scale=(0.9, 1.15),
                mode="edge",
            ),
            iaa.GammaContrast((0.6, 1.6)),
            iaa.Sometimes(0.3, iaa.GaussianBlur(sigma=(0.0, 1.0))),
            iaa.Sometimes(0.3, iaa.Sharpen(alpha=(0.0, 0.4), lightness=1.0)),
            iaa.Sometimes(0.3, iaa.AdditiveGaussianNoise(scale=(0, 8))),
        ],
        random_order=False,
        seed=seed,
    )


def balanced_indices(labels, per_class, rng):
    """`per_class` indices of each class (repeats when a class is smaller), shuffled."""
    picks = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        picks.append(rng.choice(members, per_class, replace=per_class > len(members)))
    return rng.permutation(np.concatenate(picks))


class BalancedBatches(keras.utils.PyDataset):
    """Augmented, class-balanced batches of model input, reshuffled each epoch."""

    def __init__(self, pixels, labels, batch_size, per_class, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.pixels, self.labels = pixels, labels
        self.batch_size, self.per_class = batch_size, per_class
        self.rng = np.random.default_rng(seed)
        self.augmenter = xray_augmenter(seed)
        self.on_epoch_end()

    def on_epoch_end(self):
        self.order = balanced_indices(self.labels, self.per_class, self.rng)

    def __len__(self):
        return len(self.order) // self.batch_size

    def __getitem__(self, index):
        picks = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.augmenter(images=self.pixels[picks])
        return to_model_input(np.stack(images)), self.labels[picks]
