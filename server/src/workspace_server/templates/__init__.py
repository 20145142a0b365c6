"""Image templates: a content-addressed layer store, import of image archives, snapshots."""
