"""careg-edge: few-shot anomaly detection by category-agnostic registration (CAReg).

`import careg_edge` needs numpy, onnxruntime, opencv and the compiled core;
torch is imported only by training/export code paths.
"""
from .errors import CaregError
from .version import __version__

__all__ = ["CaregError", "Inspector", "Profile", "__version__"]


def __getattr__(name):
    # Lazy so that `import careg_edge` stays light (no torch, no model loading).
    if name == "Inspector":
        from .pipeline import Inspector
        return Inspector
    if name == "Profile":
        from .profile import Profile
        return Profile
    raise AttributeError(f"module 'careg_edge' has no attribute {name!r}")
