mod denials;
