"""Is generated Pathfinder learnable at all? A small CNN as a sanity check of the data.

python scripts/pathfinder_cnn_check.py CONTOUR_LENGTH N_IMAGES EPOCHS

Generates N images with ``tasks.pathfinder_gen`` (seed 123, 32x32, the given contour
length: 14 = hard, 6 = easy), trains a 6-layer CNN (Adam 1e-3, batch 128) on the first 90%
and prints train / held-out accuracy per epoch as JSON lines. Held-out accuracy well above
50% means the labels carry the signal; it says nothing about the LRA models themselves.
"""

import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from tasks.pathfinder_gen import generate


def block(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())


def main(contour_length: int, n: int, epochs: int) -> None:
    t0 = time.time()
    x, y = generate(n, seed=123, size=32, contour_length=contour_length)
    print(f"generated {n} images, contour length {contour_length}, in {time.time() - t0:.0f}s", flush=True)
    x = torch.tensor(x, dtype=torch.float32).unsqueeze(1) / 255.0
    y = torch.tensor(y)
    n_train = int(n * 0.9)
    x_train, y_train, x_test, y_test = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    torch.manual_seed(0)
    net = nn.Sequential(block(1, 32), block(32, 32), nn.MaxPool2d(2), block(32, 64), block(64, 64), nn.MaxPool2d(2),
                        block(64, 128), block(128, 128), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(128, 2))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(n_train)
        for i in range(0, n_train, 128):
            idx = perm[i:i + 128]
            loss = F.cross_entropy(net(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            test_acc = (net(x_test).argmax(1) == y_test).float().mean().item()
            train_acc = (net(x_train[:4000]).argmax(1) == y_train[:4000]).float().mean().item()
        print(json.dumps({"epoch": epoch + 1, "train_acc": round(train_acc, 4), "test_acc": round(test_acc, 4),
                          "seconds": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
