"""One video over many workers: cutting it into segments (`segments`), encoding a segment into a part and joining
the parts (`parts`), the work folder that `--resume` reads (`workdir`), the scheduler with its local worker
processes (`run`) and Ray tasks (`raytasks`)."""
