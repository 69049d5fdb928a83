"""The dashboard's widgets: one per panel, each fed from the Model by the app's timer."""
