"""HTTP between svcreg's own processes: members of the prober group, discovery replicas and the
operator they relay to. Below both ``svcreg.operator`` and ``svcreg.discovery``, so that each
speaks to the others through one client."""
