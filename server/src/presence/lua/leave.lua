-- Leave: ARGV[3] field.
return gone(ARGV[3])
