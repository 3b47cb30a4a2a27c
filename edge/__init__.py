import os

__version__ = "0.1.0"

# OpenCV's own decode guard, read once when cv2 loads (so here, before any module imports it):
# the backstop for image formats edge.imagesize does not parse (default 2^30 pixels).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "40000000")
