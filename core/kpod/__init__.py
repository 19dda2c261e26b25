"""kpod: the daemonless CLI over crio's image and container store."""
