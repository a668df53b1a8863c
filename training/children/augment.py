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

from pneumo.model.preprocess import to_model_input


def xray_augmenter(seed):
    augmenter = iaa.Sequential(
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
    )
    # Children draw their seeds from imgaug's global RNG when built, which
    # other threads advance too: seed the whole tree from `seed` alone.
    augmenter.seed_(seed)
    return augmenter


def batch_seed(seed, epoch, index):
    """One augmentation seed per (run seed, epoch, batch): a batch looks the
    same whichever worker makes it, and in whatever order."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def balanced_indices(labels, per_class, rng):
    """`per_class` indices of each class (repeats when a class is smaller), shuffled."""
    picks = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        picks.append(rng.choice(members, per_class, replace=per_class > len(members)))
    return rng.permutation(np.concatenate(picks))


class BalancedBatches(keras.utils.PyDataset):
    """Augmented, class-balanced batches of model input, reshuffled each epoch.

    Stateless per batch (order from (seed, epoch), augmentation from (seed,
    epoch, batch)), so `workers` threads yield exactly what one worker does.
    Threads, not processes: imgaug's OpenCV calls and numpy release the GIL,
    and a process pool would pickle every batch back.
    """

    def __init__(self, pixels, labels, batch_size, per_class, seed=0, epoch=0, workers=1, **kwargs):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max(10, 2 * workers), **kwargs)
        self.pixels, self.labels = pixels, labels
        self.batch_size, self.per_class = batch_size, per_class
        self.seed, self.epoch = seed, epoch
        self.order = self._order()

    def _order(self):
        return balanced_indices(self.labels, self.per_class, np.random.default_rng([self.seed, self.epoch]))

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self._order()

    def __len__(self):
        return len(self.order) // self.batch_size

    def __getitem__(self, index):
        picks = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        augmenter = xray_augmenter(batch_seed(self.seed, self.epoch, index))
        images = augmenter(images=self.pixels[picks])
        return to_model_input(np.stack(images)), self.labels[picks]
