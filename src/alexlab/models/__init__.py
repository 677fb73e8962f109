from .alexnet import VARIANTS, AlexNet, Variant, build_model, count_parameters, list_variants, register_variant
from .lrn import LocalResponseNorm

__all__ = ["VARIANTS", "AlexNet", "Variant", "build_model", "count_parameters", "list_variants",
           "register_variant", "LocalResponseNorm"]
