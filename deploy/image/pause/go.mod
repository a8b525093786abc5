module localvol-csi/pause

go 1.22
