"""``voxssl explore``: a local web page (NiiVue) to look at voxel embeddings and correspondences."""
