"""The inference pipeline: image -> `Detections`, for any detector of the contract; below `models`.

decode.py (any image input -> RGB PIL) -> processor.py (resize, normalise; postprocess with the one score
threshold) -> run.py (`predict`: batching and the forward) -> detections.py (`Detections` and its JSON form).
compiled.py and buckets.py are the compiled fast path of run.py.
"""
