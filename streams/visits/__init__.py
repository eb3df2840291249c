"""Field visits, pure: distances, check-in verification, and each rep's visits assembled from
check-ins and check-outs (durations, overlaps, impossible travel). No I/O and no clock."""
