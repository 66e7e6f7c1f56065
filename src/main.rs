fn main() { println!("flr: under construction"); }
