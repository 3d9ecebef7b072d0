"""Browser viewer: Deep Zoom slide and overlay tiles, markers and a page built on OpenSeadragon."""

from workers.viewer.app import LOCAL_ID, make_local_app
from workers.viewer.router import DEFAULT_PREFIX, make_viewer_router

__all__ = ["DEFAULT_PREFIX", "LOCAL_ID", "make_local_app", "make_viewer_router"]
