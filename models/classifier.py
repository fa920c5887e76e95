"""A small MNIST CNN whose penultimate features define the repo's classifier-FID (the role Inception plays in FID).

It is trained by the repo itself (evaluate.py --train-classifier) to >= 99% test accuracy, so every figure can be
reproduced offline. Inputs are images in [-1, 1], (B, 1, 28, 28).
"""
import torch.nn as nn

FEATURE_DIM = 128


class MNISTClassifier(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
            nn.Flatten(), nn.Linear(64 * 7 * 7, FEATURE_DIM), nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def forward(self, x_B1HW):
        """(logits_B10, features_BF): the features are the penultimate activations used for FID."""
        f_BF = self.features(x_B1HW)
        return self.head(self.dropout(f_BF)), f_BF
