mod denials;
mod hidden;
mod session;
