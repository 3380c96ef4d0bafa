"""uft_train: the UFT trainer (issue 3). For now: recipe checking against built mixtures."""
