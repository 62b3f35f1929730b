"""Using a trained model: its run directory (`run_dir`), embedders over every exported format
(`embedders`), features and protocol metrics on a trial (`eval_trial`), a gallery folder's
incremental index (`gallery_index`) and the "no match" distance threshold (`threshold`)."""
