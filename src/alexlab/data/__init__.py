from .augment import BatchTransform, PCALighting, center_crop, crop_flip, ten_crop
from .datamodules import AlexDataModule, pixel_statistics

__all__ = ["AlexDataModule", "BatchTransform", "PCALighting", "center_crop", "crop_flip", "pixel_statistics", "ten_crop"]
