"""The events layer: what a run looks like now (`stats`), announced to pages
(`progress`, listening to the engine's `run_changed`) over a websocket (`consumer`)."""
