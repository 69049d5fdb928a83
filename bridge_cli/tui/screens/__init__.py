"""The dashboard's screens beyond the main one: flow detail, drift finding, inject, help."""
