"""State behind one small protocol; diskcache in $BRIDGE_HOME by default."""

from bridge_cli.store.base import Store, make_key
from bridge_cli.store.disk import DiskStore, open_cache_store, open_store
from bridge_cli.store.flowlog import FlowLog
from bridge_cli.store.home import bridge_home

__all__ = ["DiskStore", "FlowLog", "Store", "bridge_home", "make_key", "open_cache_store", "open_store"]
