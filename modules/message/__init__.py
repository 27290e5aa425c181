"""Message (deferrable): the driver <-> dispatch inbox, with pushes queued for delivery."""
