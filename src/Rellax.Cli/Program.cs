System.Console.WriteLine("rellax");
