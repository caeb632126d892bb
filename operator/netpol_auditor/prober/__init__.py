"""Live probes: confirm, with real connections from short-lived pods, that the CNI enforces what the index predicts.

`plan` picks the paths, `podspec` builds the probe and responder pods, `script` writes and reads what they run,
`compare` judges observations against predictions, `loop` runs cycles against the API server, `sweep` removes
leftovers of earlier runs.
"""
