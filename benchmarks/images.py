"""Real photographs for ImageNet models without a download: crops of scikit-image's bundled photos.

Calibration and evaluation crops come from different photos, so evaluation never sees an image
that calibration saw. Crops are random in position and scale (fixed seed), resized to 224x224,
normalized with ImageNet's mean and std, NCHW float32. There are no labels: quality is top-1
agreement with the FP32 model. `gray_to_rgb` makes grayscale sets (Fashion-MNIST) look like such photos.
"""

from __future__ import annotations

import numpy as np

CALIBRATION_PHOTOS = ("astronaut", "coffee", "rocket", "camera", "coins", "grass")
EVALUATION_PHOTOS = ("chelsea", "stereo_motorcycle", "retina", "hubble_deep_field", "immunohistochemistry",
                     "colorwheel", "logo", "gravel", "brick", "moon", "horse", "page")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def photo_crops(photos: tuple[str, ...], count: int, seed: int, size: int = 224) -> np.ndarray:
    """`count` crops, spread evenly over `photos`."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        photo = getattr(data, photos[i % len(photos)])()
        photo = np.asarray(photo[0] if isinstance(photo, tuple) else photo)      # stereo pairs: the left image
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=2)
        photo = photo[..., :3].astype(np.uint8)
        h, w = photo.shape[:2]
        side = int(min(h, w) * rng.uniform(0.35, 1.0))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crops.append((np.asarray(crop, np.float32) / 255.0 - MEAN) / STD)
    return np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2), dtype=np.float32)


def gray_to_rgb(gray: np.ndarray, size: int, chunk: int = 1000) -> np.ndarray:
    """Grayscale images (N, 1, H, W) in [0, 1] as an ImageNet model sees them: bilinearly upscaled to
    size x size, the one channel repeated to RGB, normalized with ImageNet's mean and std; NCHW float32."""
    import torch
    import torch.nn.functional as F

    mean, std = torch.from_numpy(MEAN).view(1, 3, 1, 1), torch.from_numpy(STD).view(1, 3, 1, 1)
    out = np.empty((len(gray), 3, size, size), np.float32)
    for start in range(0, len(gray), chunk):
        x = F.interpolate(torch.from_numpy(np.ascontiguousarray(gray[start:start + chunk], np.float32)),
                          size=(size, size), mode="bilinear", align_corners=False)
        out[start:start + chunk] = ((x.expand(-1, 3, -1, -1) - mean) / std).numpy()
    return out
