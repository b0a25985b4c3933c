"""Where a job's frames are written: seq, record, history and fan-out, one frame at a time."""
