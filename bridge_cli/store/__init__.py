"""State behind one small protocol (common/store.py); diskcache in $BRIDGE_HOME by default."""

from bridge_cli.common.store import Store, make_key
from bridge_cli.store.breakers import BreakerStates, SavedBreaker
from bridge_cli.store.disk import DiskStore, open_cache_store, open_store
from bridge_cli.store.drift import DriftRecords
from bridge_cli.store.flowlog import FlowLog
from bridge_cli.store.home import bridge_home
from bridge_cli.store.ledger import Ledger

__all__ = ["BreakerStates", "DiskStore", "DriftRecords", "FlowLog", "Ledger", "SavedBreaker",
           "Store", "bridge_home", "make_key", "open_cache_store", "open_store"]
