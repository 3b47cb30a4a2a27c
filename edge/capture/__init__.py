"""Camera and file sources, and the capture thread that feeds the latest-frame slot.

`edge.capture.spec` turns settings into a source (`open_source`, `parse_source`);
`edge.capture.runner` runs it (`CaptureThread`, `LatestFrame`); `edge.capture.base` holds the
`Frame` and `Source` interface every kind implements.
"""
