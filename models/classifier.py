"""A small CNN whose penultimate features define the repo's classifier-FID (the role Inception plays in FID).

It is trained by the repo itself, once per dataset (evaluate.py --train-classifier), so every figure can be
reproduced offline. Inputs are images in [-1, 1], (B, C, H, W) with H = W divisible
by 4 (28 for MNIST and Fashion-MNIST, 32 for CIFAR-10).
"""
import torch.nn as nn

FEATURE_DIM = 128
ROTATIONS = 4  # a dataset of one class (an unlabelled folder) trains the features to tell quarter turns apart


class Classifier(nn.Module):
    def __init__(self, channels=1, image_size=28, num_classes=10):
        super().__init__()
        side = image_size // 4  # after two 2x2 max-pools
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 1/2
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # 1/4
            nn.Flatten(), nn.Linear(64 * side * side, FEATURE_DIM), nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    @classmethod
    def for_dataset(cls, spec):
        return cls(spec.channels, spec.image_size, spec.num_classes if spec.num_classes > 1 else ROTATIONS)

    def forward(self, x_BCHW):
        """(logits_BN, features_BF): the features are the penultimate activations used for FID."""
        f_BF = self.features(x_BCHW)
        return self.head(self.dropout(f_BF)), f_BF
