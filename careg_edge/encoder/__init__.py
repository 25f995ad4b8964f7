"""CAReg encoder (needs torch): backbones, spatial transformers, registration head,
checkpoints. Import this package only on training / export / torch-runtime paths."""
from .backbones import BACKBONES, create_backbone, default_weights_path  # noqa: F401
from .careg import CARegEncoder, imagenet_encoder  # noqa: F401
from .stn import STN_MODES, compose, invert  # noqa: F401
