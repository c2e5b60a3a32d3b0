"""vlm3r_ros: 3D spatial intelligence for a robot's RGB camera.

The hand-written package and the rosidl-generated interface modules (``vlm3r_ros.msg``,
``.srv``, ``.action``) can live in different install trees (the wheel-based build keeps
the generated code in ``build/install``); ``extend_path`` lets one import see both.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = '0.1.0'
