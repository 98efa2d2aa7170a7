module example.com/hashing

go 1.22
