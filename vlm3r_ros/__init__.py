"""vlm3r_ros: 3D spatial intelligence for a robot's RGB camera.

The hand-written package and the rosidl-generated interface modules (``vlm3r_ros.msg``,
``.srv``, ``.action``) can live in different install trees (the wheel-based build keeps
the generated code in ``build/install``); ``extend_path`` lets one import see both.
"""
import os
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

# OpenCV reads its decoder limits once, when cv2 is first imported: set them before any
# module of this package imports cv2, so a compressed frame declaring more pixels than
# ingest.image_codec.MAX_PIXELS / MAX_SIDE is refused by the decoder itself (a second
# bound behind image_codec's own header scan; a stricter value already set is kept).
for _name, _limit in (('OPENCV_IO_MAX_IMAGE_PIXELS', 4096 * 4096),
                      ('OPENCV_IO_MAX_IMAGE_WIDTH', 8192), ('OPENCV_IO_MAX_IMAGE_HEIGHT', 8192)):
    _set = os.environ.get(_name, '')
    if not (_set.isdigit() and 0 < int(_set) <= _limit):
        os.environ[_name] = str(_limit)
del _name, _limit, _set
__version__ = '0.1.0'
