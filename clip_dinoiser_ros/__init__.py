"""CLIP-DINOiser open-vocabulary segmentation for ROS 2.

The generated message modules (``clip_dinoiser_ros.msg``/``.srv``) are installed by CMake into the
same package name, possibly in another ``site-packages`` or workspace prefix; ``extend_path`` lets both
halves be found whichever copy of this ``__init__`` is imported first.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
